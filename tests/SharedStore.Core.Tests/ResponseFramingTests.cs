using Google.Protobuf;
using SharedStore.Protocol;

namespace SharedStore.Core.Tests;

/// <summary>The framing of replies larger than one datagram (ResponseFraming): split, then assembled, gives back the
/// reply; a whole reply of an id ends an unfinished one; a reply that cannot be assembled becomes an error of its id.</summary>
[TestFixture]
public class ResponseFramingTests
{
    private static Response BigList(int objects)
    {
        var r = new Response { Id = 42, List = new ListReply() };
        var c = new ContainerEntry { Info = new ContainerInfo { ContainerId = 1, Name = "c" } };
        for (int i = 0; i < objects; i++)
        {
            c.Objects.Add(new ObjectEntry { Info = new ObjectInfo { ObjectId = (uint)i, Name = $"object-{i}", Size = 1024 }, UseCount = 1 });
        }

        r.List.Containers.Add(c);
        return r;
    }

    [Test]
    public void Split_ThenAssembled_GivesBackTheReply()
    {
        // Contract: a reply of several parts is reassembled exactly; only the last part completes it.
        var reply = BigList(20_000);
        byte[] whole = reply.ToByteArray();
        var parts = ResponseFraming.Split(reply.Id, whole).ToList();
        Assert.That(parts, Has.Count.EqualTo((whole.Length + ResponseFraming.PartBytes - 1) / ResponseFraming.PartBytes).And.Count.GreaterThan(2));
        Assert.That(parts.All(p => p.ToByteArray().Length <= ResponseFraming.PartBytes + 64), "each part fits a datagram of about one part");

        var assembler = new ResponseFraming.Assembler();
        Response? done = null;
        foreach (var p in parts)
        {
            Assert.That(done, Is.Null, "only the last part completes the reply");
            done = assembler.Add(Response.Parser.ParseFrom(p.ToByteArray()), [], out _);
        }

        Assert.That(done, Is.EqualTo(reply));
        Assert.That(assembler.Pending, Is.Zero);
    }

    [Test]
    public void WholeReplyOfTheSameId_EndsAnUnfinishedOne()
    {
        // Contract: the broker answers an error after a part it could not send; that error is the reply, and the
        // parts before it are dropped.
        var reply = BigList(20_000);
        var first = ResponseFraming.Split(reply.Id, reply.ToByteArray()).First();
        var assembler = new ResponseFraming.Assembler();
        Assert.That(assembler.Add(first, [], out _), Is.Null);
        var error = new Response { Id = reply.Id, Error = Protocol.ErrorCode.NoResources, Message = "could not send" };
        Assert.That(assembler.Add(error, [], out _), Is.EqualTo(error));
        Assert.That(assembler.Pending, Is.Zero);
    }

    [Test]
    public void PartsThatDoNotParse_BecomeAnInternalErrorOfTheirId()
    {
        // Contract: a caller whose reply cannot be assembled hears so, with its own id.
        var assembler = new ResponseFraming.Assembler();
        var bad = new Response { Id = 9, Part = ByteString.CopyFrom(0xFF, 0xFF, 0xFF), More = false };
        var r = assembler.Add(bad, [], out _);
        Assert.That(r!.Id, Is.EqualTo(9UL));
        Assert.That(r.Error, Is.EqualTo(Protocol.ErrorCode.Internal));
    }
}
