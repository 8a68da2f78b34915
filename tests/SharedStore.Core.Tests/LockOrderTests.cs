using SharedStore.Broker;

namespace SharedStore.Core.Tests;

/// <summary>The broker's lock-order check (<see cref="LockOrder"/>, docs/ARCHITECTURE.md "Who owns which lock"): it
/// runs in the Release broker every other test starts, so these pin that it refuses an inversion before taking it.</summary>
[TestFixture]
public class LockOrderTests
{
    [Test]
    public void Enter_InOrder_TakesAndReleasesEveryLevel()
    {
        object flush = new(), model = new(), obj = new();
        var catalog = new Lock();
        using (LockOrder.Enter(flush, LockLevel.DurableFlush))
        using (LockOrder.Enter(model, LockLevel.Model))
        using (LockOrder.Enter(catalog, LockLevel.DurableCatalog))
        using (LockOrder.Enter(obj, LockLevel.DurableObject))
        {
            Assert.That(Monitor.IsEntered(model) && catalog.IsHeldByCurrentThread && Monitor.IsEntered(obj), Is.True);
        }

        Assert.That(LockOrder.Held, Is.Zero);
        Assert.That(Monitor.IsEntered(model) || catalog.IsHeldByCurrentThread, Is.False);
    }

    [Test]
    public void Enter_OuterLevelWhileHoldingAnInnerOne_ThrowsWithoutTakingIt()
    {
        object model = new(), obj = new();
        using (LockOrder.Enter(obj, LockLevel.DurableObject))
        {
            var e = Assert.Throws<InvalidOperationException>(() => LockOrder.Enter(model, LockLevel.Model));
            Assert.That(e!.Message, Does.Contain("Model").And.Contain("DurableObject"));
            Assert.That(Monitor.IsEntered(model), Is.False);
        }

        Assert.That(LockOrder.Held, Is.Zero);
    }

    [Test]
    public void Enter_SameLevelTwice_Throws()
    {
        object a = new(), b = new();
        using (LockOrder.Enter(a, LockLevel.DurableObject))
        {
            Assert.Throws<InvalidOperationException>(() => LockOrder.Enter(b, LockLevel.DurableObject));
            Assert.Throws<InvalidOperationException>(() => LockOrder.TryEnter(b, LockLevel.DurableFlush, out _));
        }
    }
}
